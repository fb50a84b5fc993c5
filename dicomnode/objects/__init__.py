"""The DICOM objects the node writes: coded concepts, SR and SC builders. Pure."""
