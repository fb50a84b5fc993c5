"""Receiving: the admission policy every way in calls, the DICOM SCP, its connections,
association slots and PDU guards, DICOM TLS."""
