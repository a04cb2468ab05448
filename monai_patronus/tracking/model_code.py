"""MLflow "models from code" file of the Patronus ``pyfunc`` model (no pickle).

:func:`~monai_patronus.tracking.pyfunc.log_patronus_model` logs a copy of this file; loading the model runs the
copy, and MLflow then calls ``load_context`` with the artifacts. Keep it to these lines: it runs in every
process that loads the model (see "Trust boundary" in :mod:`monai_patronus.tracking.pyfunc`).
"""

from __future__ import annotations

import mlflow

from monai_patronus.tracking.pyfunc import PatronusModel

mlflow.models.set_model(PatronusModel())
