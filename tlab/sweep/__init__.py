"""`tlab sweep`: hyperparameter search over normal runs, on optuna (TPE sampling, median pruning, an SQLite study).

space.py parses the search space, settings.py the sweep's own settings and its sweep.yaml, study.py runs trials (one
at a time, or in worker processes sharing the study) and results.py writes the table, trials.csv, the plots and
best.yaml. Every trial is a `pipeline.run` into SWEEP/trial-NNN/, whose evaluations feed the pruner through the
loop's `report` hook.
"""
