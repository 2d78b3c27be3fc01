"""The CLIP toolbox: neutral helpers on open_clip towers (embedding stem, masked mean over frames,
tower checks and depth, LoRA on the fused qkv, per-block token counts) shared by ``tempme`` and
every method. It imports nothing of the suite, the methods or TempMe."""
