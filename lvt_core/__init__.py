"""LVT science core: phantoms, labels, losses, network, inference, lesions, tracking, volumetry.

Plain functions and small classes on arrays and SimpleITK images. No database, no UI,
no configuration files: everything a function needs is passed in.
"""

# The pipeline's version, saved with every result beside the model's own: the same checkpoint
# draws different label maps when the inference around it changes (0.2.0: short scans padded by
# repeating their edge slices; 0.3.1: each result records the fluid its day's reading left out).
__version__ = "0.3.1"
