"""The algorithm as plain tensor functions (torch only), and the words the whole package uses.

Modules: ``schedule`` (where pruning happens, how many tokens survive), ``prune``
(STA's scoring and selection), ``rlt`` / ``evs`` / ``repshift`` / ``vidtldr`` (the
other methods' math), ``select`` (deterministic ranking: exact ties by position),
``reduction`` (the reducer interface), ``methods`` (every method behind it, ``METHODS``),
``forward`` (one pruned forward, shared by every model family), ``attention`` (the
attention kernel), ``contract`` (what every model honours). See ``docs/methods.md``.

Vocabulary, one meaning each:

- **clip**: the ``F`` frames (``3 x F x H x W``) one forward of a model takes; a batch is ``B x 3 x F x H x W``.
- **view**: one clip cut from a video by the test protocol: a **segment** (which temporal
  window, index ``0..num_segments-1``) times a **crop** (which spatial window, ``0..num_crops-1``).
  A :class:`~sta.data.sampling.ViewProtocol` says how a video becomes its views.
- **token**: one ``tubelet x patch x patch`` cube; ``T`` slices (``F / tubelet``) of ``S`` tokens
  (``(H / patch)^2``), in slice-major order; a token's **position** is ``slice * S + spatial``.
- **stage**: one of the three pruning points, after blocks ``0``, ``depth // 3`` and ``2 * depth // 3``;
  a stage cuts the sequence into contiguous **groups** and removes ``r`` tokens from each.
- **r**: tokens removed per group at each stage. Users write one int or three
  (:data:`~sta.core.schedule.RSpec`); inside the code it is always
  :data:`~sta.core.schedule.R`, three ints (:func:`~sta.core.schedule.normalize_r`), and it is
  formatted only for output (:func:`~sta.core.schedule.format_r`). ``r = 0`` everywhere is the
  unpruned model: the baseline is an r, not a method.
- **method**: how the ``r`` tokens of a group are chosen (a key of :data:`~sta.core.methods.METHODS`);
  every method removes the same number of tokens at each stage (unless its name says otherwise:
  ``rlt-threshold``, ``evs-q``), so at one r all cost the same up to their own scoring.
- **budget**: a target cost (``flops_reduction``, ``keep_ratio``) from which the smallest r meeting it is picked.
- **dataset**: one row of :data:`sta.data.datasets.DATASETS` (sampling protocol, classes, class names).
- **img_size**: the side of the square frames a model takes (HF configs say ``image_size``, the CLI
  ``--input-size`` as the release did); a view's ``crop_size`` is the same number seen from the data side.
- **source**: what a user names to get a model (a release size, an HF directory, an exported file,
  or nothing: the bundled model); :mod:`sta.factory` turns it into a model or a runner.
"""
