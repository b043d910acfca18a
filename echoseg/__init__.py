"""EchoSeg: real-time left-ventricle segmentation of echocardiography video."""

__version__ = "0.1.0"
