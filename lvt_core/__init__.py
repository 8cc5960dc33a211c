"""LVT science core: phantoms, labels, losses, network, inference, lesions, tracking, volumetry.

Plain functions and small classes on arrays and SimpleITK images. No database, no UI,
no configuration files: everything a function needs is passed in.
"""

__version__ = "0.1.0"
