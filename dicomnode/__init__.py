"""dicomnode: an AI fracture-triage node for hospital DICOM networks."""

__version__ = "0.1.0"

#: Manufacturer written into every object the node creates; also how the node recognises its
#: own output so that a routing loop cannot form.
MANUFACTURER = "dicomnode"
