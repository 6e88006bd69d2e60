"""tf.data input pipelines and the data the project generates itself."""
