"""Demo only: the embedded corpus (a PACS in miniature), the loopback server it is downloaded from, and the
commands that make the demo's inputs from it (``edsam.demo.commands``)."""
