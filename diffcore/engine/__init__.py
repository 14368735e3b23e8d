"""The engine under the method's steps: device, dtype and seeds (runtime), processes (distributed), durable files
(safety, checkpoint, genset), data loading on the device (loader) and generation at the hardware's pace (fastgen,
stepcache). Nothing here knows the paper; nothing here imports the layers above."""
