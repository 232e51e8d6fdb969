"""From image files to training batches, in the order the data flows:

* Images to TFRecords: `normalize` (one file's bytes to 8-bit RGB, Pillow), `schema` (the
  `tf.train.Example` features, encoding and parsing), `tfrecords` (the Apache Beam pipeline),
  `split_stats` and `tfrecords_progress` (its exact split statistics and progress lines).
* Datasets on disk: `datasets` (one prefix = one dataset and its metadata), `selections` (what
  `--data` names), `migration` (the old one-metadata-per-folder layout), `validation` (TFDV),
  `sample_data` (the bundled sample photos).
* Reading: `shards` (listing and checking shard files, corrupt records), `augment` (per-example
  crops and holes), `input_pipeline` (the tf.data training and evaluation inputs).
* Holes: `masks` (generated holes, fill, network inputs), `mask_sets` (the user's mask files and
  `pipelines/make_mask_set.py`), `file_holes` (file masks as holes, mixed with generated
  ones).
"""
