"""RIFE 4.25 frame interpolation (Practical-RIFE's IFNet_HDv3): ``ifnet.py`` the network, ``detect.py`` the
release versions told apart by their keys."""
