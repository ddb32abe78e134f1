"""RL features: scripted agents, replay buffers, checkpoints."""
