"""Feature specs, vocabularies, histories and tf.data pipelines."""
