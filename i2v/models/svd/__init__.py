"""Stable Video Diffusion (Blattmann et al. 2023): the video U-Net (``unet.py``), the autoencoder with its temporal
decoder (``vae.py``), the single-file and diffusers formats with their rename tables (``checkpoint.py``), and
``detect.py``. The CLIP image tower is shared with Wan: ``models/encoders/clip_vision.py``."""
