"""The built-in image-to-video model, trained here on procedural clips: two backbones behind one interface
(``unet3d.py``, ``dit.py``), the conditioning and warp heads they share (``heads.py``), and ``detect.py``."""
