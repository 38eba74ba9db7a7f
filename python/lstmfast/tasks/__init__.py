"""The classic LSTM sample tasks, runnable from the command line (``lstmfast <task>``)."""
