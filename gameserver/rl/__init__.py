"""RL around the fleet: rollouts and self-play through the client, checkpoints, episode recording
and generals.io replay files. (Scripted agents: gameserver.agents; experience replay: gameserver.replay.)"""
