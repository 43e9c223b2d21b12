"""Shipping a run: SavedModel for TF Serving, TFLite and ONNX, each checked against Keras."""
