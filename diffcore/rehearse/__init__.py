"""The rehearsal: the paper profile run end to end on stand-ins written in the real formats (random weights in the
files the real weights come in, every paper dataset in its real on-disk layout), through exactly the code a real run
takes. `python -m diffcore rehearse --out DIR [--size tiny|full]`; see diffcore.rehearse.driver.
"""
