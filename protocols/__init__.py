"""Sans-IO SMPP 3.4: PDU codec, session state machine, encodings, segmentation, receipts.

Nothing here imports trio, does I/O or reads the clock: bytes and ``now`` come in, events and
bytes go out (the h11 model).
"""
