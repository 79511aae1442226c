"""Layer 3: the job functions a notebook cell calls: queue a prompt, send it, follow it, collect its images.

Each function does one step of a job's life and can be called on its own; a worker is these
functions in a loop (``select_next_job``, ``submit_job``, ``poll_job_status``), and ``recover``
puts a store and a server back in agreement after a crash.

Example::

    >>> import comfynb
    >>> store = comfynb.open("lab.duckdb")
    >>> job = comfynb.enqueue(store, workflow, run="portraits", params={"KSampler.seed": 42})
    >>> with comfynb.Client("http://127.0.0.1:8188") as client:
    ...     job = comfynb.submit_job(store, client, job)
    ...     while not job.status.is_terminal:
    ...         job = comfynb.poll_job_status(store, client, job)
    >>> job.status.value, len(store.candidates(job=job))
    ('completed', 1)

Decisions (see README.md, "The store"):

* ``completed`` always means "every image recorded": polling a job the server finished calls
  ``process_job_result``, which downloads the images and completes the job with its candidates
  in ONE transaction.
* A job the server reports interrupted that ``cancel`` did not stop (someone pressed Cancel in
  ComfyUI) is ``failed`` with ``error.type == "Interrupted"``; ``cancel`` itself moves the job
  to ``cancelled`` before the server reports anything.
* Image files go to ``<output_dir>/run-<run id>/job-<job id>/<type>/<subfolder>/<file name>``:
  server file names repeat (counters restart, several servers), so each job has its folder.
* Secrets go in ``extra_data`` to ``submit_job`` and ``recover``; they are posted, never stored.
"""

from .cancel import cancel
from .enqueue import enqueue, enqueue_many
from .recover import Recovery, recover
from .refine import refine, reproduce
from .results import DOWNLOAD_ATTEMPTS, process_job_result, record_result, record_results
from .retry import retry_failed
from .submit import poll_job_status, select_next_job, select_next_jobs, submit_job

__all__ = [
    "DOWNLOAD_ATTEMPTS",
    "Recovery",
    "cancel",
    "enqueue",
    "enqueue_many",
    "poll_job_status",
    "process_job_result",
    "record_result",
    "record_results",
    "recover",
    "refine",
    "reproduce",
    "retry_failed",
    "select_next_job",
    "select_next_jobs",
    "submit_job",
]
