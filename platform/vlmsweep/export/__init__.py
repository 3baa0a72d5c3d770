"""Exports of a trained variant to other formats: `vlmsweep export ... --format hf-llava OUT`
(export/hf_llava.py). Nothing is imported here: the CLI loads this package on every command,
and the exporter pulls in torch and transformers."""
