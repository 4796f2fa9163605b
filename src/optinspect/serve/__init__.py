"""A warm model behind every command: ``optinspect serve`` keeps one model loaded and answers
the model commands over a private Unix socket.

- ``wire``: the framing (length-prefixed JSON) and the codec that carries result records.
- ``place``: where the socket lives (a directory only its user can enter), and the one
  lock per user, which names the running server.
- ``server``: the server (``socketserver``), one forward at a time.
- ``client``: finds a server whose model matches, sends a job and its input, and yields
  its results.

The client side (``wire``, ``place``, ``client``) imports neither torch nor transformers.
"""
