"""Model training: training-set builders, models, training loops, evaluation, export."""
