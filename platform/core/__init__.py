"""Base utilities (data, images, checkpoints, configs, metrics, TensorBoard, Ray start-up): the only
part of ``rlad.platform`` that algorithms and envs import."""
