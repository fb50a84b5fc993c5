"""Working with a PACS (Orthanc) over its REST API."""
