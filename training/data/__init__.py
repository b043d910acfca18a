"""Echo data: video I/O, the EchoNet-Dynamic and CAMUS datasets, the synthetic generator, data checks.

Modules: ``echonet`` (layout, ``load_clips``, ``EchoNetDataset``; videos are read by ``echoseg.video``),
``camus`` (``load_camus``), ``synthetic`` (``generate``), ``check`` (``check_dataset``),
``dataset`` (training windows), ``augment`` (flips and rotation), ``tracings`` (chord polygons).
Import the module you need; nothing heavy is imported here.
"""
