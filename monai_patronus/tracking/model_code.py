"""MLflow "models from code" file of the Patronus ``pyfunc`` model.

:func:`~monai_patronus.tracking.pyfunc.log_patronus_model` passes this file's path as ``python_model=`` to
``mlflow.pyfunc.log_model``. MLflow copies the file into the logged model folder and, when the model is
loaded (``mlflow.pyfunc.load_model``, ``mlflow models serve``), runs the copy, which hands MLflow an empty
:class:`~monai_patronus.tracking.pyfunc.PatronusModel`. MLflow then calls its ``load_context`` with the
model's artifacts (a JSON config and a ``state_dict``). So no pickle is written or read. What the copy runs
is whatever sits in the store, though: see "Trust boundary" in :mod:`monai_patronus.tracking.pyfunc`.

Keep this file to these lines: everything it does happens in every process that loads the model.
"""

from __future__ import annotations

import mlflow

from monai_patronus.tracking.pyfunc import PatronusModel

mlflow.models.set_model(PatronusModel())
