"""transferlearn's benchmarks, run from the repository root as modules of this package.

    python -m benchmarks.compare          # the speed benchmark against the chapter's loops
    python -m benchmarks.evidence         # every claim of the chapter, measured
    python -m benchmarks.levers LEVER     # each speed lever in isolation
    python -m benchmarks.head_epochs      # cached head epochs against a converged probe
    python -m benchmarks.data_loading     # what load_image / load_image_folder's data levers cost

The benchmarks use transferlearn only through its public names (``import transferlearn as
tl``); the shared pieces exist once: timing in ``benchutil``, the datasets in ``sources``
(folders) and ``tensors`` (decoded once), the library-side model in ``models``, the
chapter's plain-PyTorch loops in ``textbook``, small helpers in ``util``.
"""

__all__: list[str] = []
