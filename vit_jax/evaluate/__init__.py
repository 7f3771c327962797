"""Evaluators run during training and on finished workdirs."""
