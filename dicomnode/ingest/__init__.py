"""Receiving: the DICOM SCP, its association and PDU guards, DICOM TLS."""
