-- title: Training-set label rates
-- requires: training_labels
-- Per training set and label: rows, rows with the label defined, and the positive rate
-- among those (labels in [0, 1]; soft labels count their mean).
SELECT
    training_set,
    label,
    n_rows,
    labelled,
    round(positives, 4) AS positives,
    round(positives / nullif(labelled, 0), 4) AS rate
FROM training_labels
ORDER BY training_set, label;
