"""Echo data: video I/O, the EchoNet-Dynamic and CAMUS datasets, the synthetic generator, data checks.

Modules: ``base`` (what a data source is: ``DataSource``, ``Problem``), ``sources`` (the table of
sources and ``open_source``), ``echonet`` (layout, ``load_clips``; videos are read by
``echoseg.video``), ``camus`` (``load_camus``), ``store`` (the frame store), ``source``
(``ClipSource``), ``synthetic`` (``generate``), ``check`` (``check_dataset``),
``dataset`` (training windows), ``augment`` (flips and rotation), ``tracings`` (chord polygons).
Import the module you need; nothing heavy is imported here.
"""
