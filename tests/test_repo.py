"""The README's promises: its test command is CI's, the listing prints, and
every package the code imports is declared in the requirements files."""

import ast
import os
import re
import sys
import tomllib

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


def test_docs_point_inside_the_repository():
  """The design notes live in docs/; nothing refers to the old copy outside
  the repository (the strings are split so this file does not match)."""
  outside = ('../' 'shared', 'shared/' 'DESIGN')
  assert '`docs/DESIGN.md`' in _read('README.md')
  assert os.path.isfile(os.path.join(ROOT, 'docs', 'DESIGN.md'))
  paths = ['README.md']
  for directory in ('vit_jax', 'tests', 'configs', 'benchmarks', 'launch',
                    'docs'):
    for root, _, files in os.walk(os.path.join(ROOT, directory)):
      paths += [os.path.relpath(os.path.join(root, name), ROOT)
                for name in files if name.endswith(('.py', '.md'))]
  for path in paths:
    text = _read(path)
    assert not any(pattern in text for pattern in outside), path


def test_listing_prints_a_row_per_variant(capsys):
  zoo.main(['--family', 'mixer'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].split() == ['model', 'variant', 'params', 'GFLOPs@224']
  rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[1:]}
  expected_variants = [e[1] for e in zoo.ZOO if e[0] == 'mixer']
  assert [v for _, v in rows] == expected_variants
  assert rows[('mixer', 'B/16')][0] == '59,880,472'
  assert rows[('mixer', 'L/16')][0] == '208,196,168'
  # Mixer-B/16's matmuls are 12.6 G multiply-adds at 224 px (the paper's
  # figure); the listing counts them analytically, 2 FLOPs each.
  gmacs = float(rows[('mixer', 'B/16')][1]) / 2
  assert abs(gmacs - 12.6) <= 0.05


# ----------------------------------------------------------------------------
# Every third-party import is a declared requirement.

# Top-level import name -> distribution name, where they differ by more than
# case and '-' vs '_'. A name absent here is taken as its own distribution.
IMPORT_TO_DISTRIBUTION = {
    'PIL': 'Pillow',
    'absl': 'absl-py',
    'cv2': 'opencv-python',
    'orbax': 'orbax-checkpoint',
    'skimage': 'scikit-image',
    'sklearn': 'scikit-learn',
    'tensorflow': 'tensorflow-cpu',
    'yaml': 'PyYAML',
}

# Imported only by the golden-file generators tests/support/make_golden*.py
# and their shared core golden_torch.py, which are run by hand (see their
# docstrings); the tests read their committed output and never import these.
HAND_RUN_ONLY = {'timm', 'torch', 'transformers'}
HAND_RUN_FILES = ('make_golden', 'golden_torch')

# Optional imports of scripts run by hand, imported only when asked for:
# the PyTorch side of `benchmarks/train_throughput.py --compare=timm`.
OPTIONAL_IMPORTS = {
    os.path.join('benchmarks', 'train_throughput.py'): {'timm', 'torch'},
}

# (directory, requirements files its imports may use). The library and the
# recipes get the runtime list only; tests and benchmarks also the test list.
IMPORT_SCOPES = (
    ('vit_jax', ('requirements.txt',)),
    ('configs', ('requirements.txt',)),
    ('tests', ('requirements.txt', 'requirements-test.txt')),
    ('benchmarks', ('requirements.txt', 'requirements-test.txt')),
)


def _canonical(distribution):
  return re.sub(r'[-_.]+', '-', distribution).lower()


def declared_distributions(*requirement_files):
  """Canonical names of the distributions listed in requirement files."""
  names = set()
  for name in requirement_files:
    for line in _read(name).splitlines():
      line = line.split('#', 1)[0].strip()
      if line and not line.startswith('-'):
        names.add(_canonical(re.match(r'[A-Za-z0-9._-]+', line).group()))
  return names


def top_level_imports(source):
  """Top-level names of the absolute imports in Python source."""
  names = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names.update(alias.name.split('.')[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names.add(node.module.split('.')[0])
  return names


def undeclared_imports(imports, declared, local_modules=()):
  """The third-party names in `imports` whose distribution is not declared."""
  third_party = (set(imports) - set(sys.stdlib_module_names)
                 - set(local_modules) - {'vit_jax'})
  return sorted(name for name in third_party if _canonical(
      IMPORT_TO_DISTRIBUTION.get(name, name)) not in declared)


def _python_files(directory):
  for root, _, files in os.walk(os.path.join(ROOT, directory)):
    for name in sorted(files):
      if name.endswith('.py'):
        yield os.path.join(root, name)


def test_every_third_party_import_is_a_declared_requirement():
  problems = []
  for directory, requirement_files in IMPORT_SCOPES:
    declared = declared_distributions(*requirement_files)
    # Modules of one tree import each other by name (tests/support/ is on
    # the tests' sys.path: tests/conftest.py).
    local_modules = {os.path.splitext(os.path.basename(path))[0]
                     for path in _python_files(directory)}
    for path in _python_files(directory):
      with open(path) as f:
        imports = top_level_imports(f.read())
      relative = os.path.relpath(path, ROOT)
      if os.path.basename(path).startswith(HAND_RUN_FILES):
        imports -= HAND_RUN_ONLY
      imports -= OPTIONAL_IMPORTS.get(relative, set())
      for name in undeclared_imports(imports, declared, local_modules):
        problems.append(f'{relative} imports {name!r} (distribution '
                        f'{IMPORT_TO_DISTRIBUTION.get(name, name)!r}), which '
                        f'is not in {" or ".join(requirement_files)}')
  assert not problems, '\n'.join(problems)


def test_import_check_catches_an_undeclared_package():
  declared = declared_distributions('requirements.txt')
  source = ('import os\nimport numpy as np\nimport yaml\n'
            'from PIL import Image\nfrom sklearn import svm\n'
            'from . import sibling\nimport vit_jax.models\n')
  assert undeclared_imports(top_level_imports(source), declared) == [
      'PIL', 'yaml']
  test_declared = declared_distributions('requirements.txt',
                                         'requirements-test.txt')
  assert undeclared_imports(top_level_imports(source), test_declared) == [
      'yaml']
  # torch is allowed in the hand-run golden generators only.
  assert undeclared_imports({'torch'}, test_declared) == ['torch']


def test_package_metadata_reads_the_requirements_files():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    pyproject = tomllib.load(f)
  assert pyproject['project']['requires-python'] == '>=3.11'
  assert set(pyproject['project']['dynamic']) == {'dependencies',
                                                  'optional-dependencies'}
  dynamic = pyproject['tool']['setuptools']['dynamic']
  assert dynamic['dependencies'] == {'file': ['requirements.txt']}
  assert dynamic['optional-dependencies'] == {
      'test': {'file': ['requirements-test.txt']}}


# A test's bound on a subprocess or a wait: generous, because CI may run
# on a loaded 2-core machine (the whole suite once took 47 minutes there,
# and a 300 s bound failed). CI's own time limit is the real guard.
MIN_TEST_TIMEOUT = 900
# The SLURM harness's own short polls of the cluster's state.
_TIMEOUT_EXEMPT = ('slurm_cluster.py', 'test_slurm_cluster.py',
                   'gcs_emulator.py')


def short_timeouts(source, filename='<test>'):
  """(line, value) of each `timeout=N` (a call's keyword or a function's
  default) below MIN_TEST_TIMEOUT seconds in `source`."""
  found = []
  for node in ast.walk(ast.parse(source, filename)):
    pairs = []
    if isinstance(node, ast.Call):
      pairs = [(k.arg, k.value) for k in node.keywords]
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      args = node.args.args[len(node.args.args) - len(node.args.defaults):]
      pairs = [(a.arg, d) for a, d in zip(args, node.args.defaults)]
      pairs += [(a.arg, d) for a, d in zip(node.args.kwonlyargs,
                                           node.args.kw_defaults) if d]
    for name, value in pairs:
      if (name and 'timeout' in name and isinstance(value, ast.Constant)
          and isinstance(value.value, (int, float))
          and value.value < MIN_TEST_TIMEOUT):
        found.append((value.lineno, value.value))
  return found


def test_tests_bound_their_subprocesses_generously():
  offenders = []
  for path in _python_files('tests'):  # tests/support/ included
    name = os.path.basename(path)
    if name in _TIMEOUT_EXEMPT:
      continue
    relative = os.path.relpath(path, ROOT)
    offenders += [f'{relative}:{line}: timeout={value}'
                  for line, value in short_timeouts(_read(relative), name)]
  assert not offenders, offenders


def test_short_timeout_check_catches_calls_and_defaults():
  source = ('import subprocess\n'
            'def wait(path, timeout=60): pass\n'
            'subprocess.run(["x"], timeout=300)\n'
            'subprocess.run(["x"], timeout=1800)\n'
            'p.communicate(timeout=120.0)\n')
  assert short_timeouts(source) == [(2, 60), (3, 300), (5, 120.0)]
