"""Two-tower retrieval on TensorFlow Recommenders: data, towers, model, training, evaluation."""

from tfrs_model.keras2 import select_keras_2

# Before any module of the project imports TensorFlow.
select_keras_2()
