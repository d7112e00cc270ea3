"""RAFT optical flow (Teed & Deng 2020): the large model (raft-things/sintel/kitti/chairs.pth) and raft-small."""
