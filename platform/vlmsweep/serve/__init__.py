"""serve layer of vlmsweep: talking to trained variants (`vlmsweep chat`) and quantized inference.

Sits beside export/ above eval/: it loads models the way evaluation does (eval/generate.py).
"""
