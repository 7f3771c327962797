"""The README's promises: its test command is CI's, the listing prints."""

import os
import re

from vit_jax.models import __main__ as zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
  with open(os.path.join(ROOT, *parts)) as f:
    return f.read()


def _readme_commands():
  blocks = re.findall(r'```\n(.*?)\n```', _read('README.md'), re.S)
  return [line.strip() for block in blocks for line in block.splitlines()
          if line.strip().startswith('python3 -m venv')]


def test_ci_runs_exactly_the_readme_test_command():
  commands = _readme_commands()
  test_commands = [c for c in commands if 'pytest' in c]
  assert len(test_commands) == 1, commands
  ci_lines = [line.strip() for line in _read('.ci', 'run').splitlines()]
  assert test_commands[0] in ci_lines
  assert any('xla_force_host_platform_device_count=8' in line
             for line in ci_lines)


def test_readme_main_job_is_the_digits_run():
  main_jobs = [c for c in _readme_commands() if 'pytest' not in c]
  assert len(main_jobs) == 1
  assert ('-m vit_jax.main --config=configs/digits.py --workdir='
          in main_jobs[0])


def test_listing_prints_a_row_per_variant(capsys):
  zoo.main(['--family', 'mixer'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].split() == ['model', 'variant', 'params', 'GFLOPs@224']
  rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[1:]}
  expected_variants = [e[1] for e in zoo.ZOO if e[0] == 'mixer']
  assert [v for _, v in rows] == expected_variants
  assert rows[('mixer', 'B/16')][0] == '59,880,472'
  assert rows[('mixer', 'L/16')][0] == '208,196,168'
  # Mixer-B/16's matmuls are 12.6 G multiply-adds at 224 px; XLA counts 2
  # FLOPs each, plus the elementwise work (GELU's erf: ~3% here).
  gmacs = float(rows[('mixer', 'B/16')][1]) / 2
  assert 12.6 <= gmacs <= 12.6 * 1.04
