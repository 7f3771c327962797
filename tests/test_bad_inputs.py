"""The bad-input catalogue: every entry point with the bad inputs a user
gives it, each held to the error contract: the expected exit status, one
line on stderr naming the problem, and nothing created or changed.

CATALOGUE is a table of (entry point, argv, exit status, text the line must
hold); COUNT = len(CATALOGUE) is the number docs/testing.md quotes. Placeholders
in argv: {tmp} a fresh directory per case (also the working directory),
{file} an existing file, {dir} an existing empty directory, {image} a PNG
image and {transformers} a transformers checkpoint's directory (its
config.json) in it, {run}
a workdir as a training run leaves it (config.json, a checkpoint at step
5), {data} the prepared TFDS data_dir, {sweep} a directory of finished
runs `vit_jax.scaling` can fit, {root} the checkout.

To keep the time modest, the cases run in one Python process per entry
point (this file as a script: `_drive`), which calls the entry point as
its `if __name__ == '__main__'` block does (`app.run` with the module's
flag parser, absl's flags reset between cases) with file descriptor 2
captured, so C++ and Python output alike are seen.
`test_command_line_matches_the_driver` runs one case per entry point as a
real `python -m` subprocess and checks it gives the same status and line.
"""

import json
import os
import subprocess
import sys
import tempfile
import traceback

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 3600

MAIN = ('--config={root}/configs/digits.py', '--workdir={tmp}/w',
        '--config.data.data_dir={data}')
SWEEP_OK = ('--workdirs={sweep}/*', '--metric=val/accuracy')

# (entry point, argv after the program name, exit status, text in the line)
CATALOGUE = [
    # python -m vit_jax.main
    ('main', (*MAIN, '--config.totl_steps=3'), 2,
     "Unknown config key 'totl_steps'. Did you mean 'total_steps'?"),
    ('main', (*MAIN, '--config.data.nme=x'), 2, "Did you mean 'name'?"),
    ('main', (*MAIN, '--config.modle.width=3'), 2, "Did you mean 'model'?"),
    ('main', (*MAIN, '--config.schedule.warmup_steps=1000',
              '--config.total_steps=10'), 2,
     'warmup_steps (1000) + cooldown_steps (0) = 1000 exceeds total_steps '
     '(10)'),
    ('main', (*MAIN, '--config.evals.fewshot.datasets.digits.name=cifar1000'),
     2, "unknown dataset 'cifar1000'; did you mean 'cifar100'?"),
    ('main', (*MAIN, '--config.evals.fewshot.datasets.digits.name=cifar100'),
     2, "evals.fewshot.datasets.digits.name: dataset 'cifar100' is not "
     'prepared in data_dir {data}'),
    ('main', (*MAIN, '--config.data.name=image_folder',
              '--config.data.folder={tmp}/no_such_folder'), 2,
     "data.folder: dataset 'image_folder' needs a directory"),
    ('main', (*MAIN, '--config.data.name=image_folder'), 2,
     "data.folder: dataset 'image_folder' needs a directory"),
    ('main', (*MAIN, '--config.init_from.path={tmp}/no_such_run'), 2,
     "init_from.path '{tmp}/no_such_run' does not exist"),
    ('main', (*MAIN, 'extra'), 2, "unexpected arguments ['extra']"),
    ('main', ('--config={root}/configs/digits.py', '--workdir=s3://b/w'), 2,
     "Unsupported scheme 's3://'"),
    ('main', ('--config={root}/configs/digits.py', '--workdir=gs:/b/w'), 2,
     'looks like a URL with its "//" missing'),
    ('main', ('--config={tmp}/no_such_recipe.py', '--workdir={tmp}/w'), 2,
     'no_such_recipe.py'),
    ('main', ('--workdir={tmp}/w',), 2, '--config'),
    ('main', ('--config={root}/configs/digits.py',), 2, '--workdir'),
    ('main', (*MAIN, '--config.lr=abc'), 2, 'could not convert'),
    ('main', (*MAIN, '--config.model.name=resnet'), 2,
     "Unknown model.name 'resnet'"),
    ('main', (*MAIN, '--config.model.variant=Z/16'), 2,
     "Unknown ViT size 'Z' in variant 'Z/16'"),
    ('main', (*MAIN, '--config.batch_size=0'), 2,
     'config.batch_size must be a positive integer'),
    ('main', (*MAIN, '--config.optimizer.name=adam'), 2, 'adamw'),
    ('main', (*MAIN, '--no_such_flag=1'), 2, 'no_such_flag'),
    ('main', (*MAIN, '--config.data.folder.x=1'), 2,
     'data.folder is not a section'),
    ('main', (*MAIN, '--config.loss=dice_ce'), 2,
     "config.loss='dice_ce' does not train objective 'supervised'; valid "
     "choices: ['softmax_xent', 'sigmoid_xent']"),
    ('main', (*MAIN, '--config.objective=segmentation'), 2,
     'config.label_smoothing=0.1: the segmentation losses have no label '
     'smoothing'),
    ('main', (*MAIN, '--config.objective=segmentation',
              '--config.label_smoothing=0'), 2,
     "objective 'segmentation' needs a dataset with label maps"),
    ('main', (*MAIN, '--config.model.num_classes=5'), 2,
     "model.num_classes=5 does not match the 10 classes of dataset 'digits'"),
    # python -m vit_jax.evaluate
    ('evaluate', ('--workdir={tmp}/no_such_run',), 1,
     'config.json does not exist'),
    ('evaluate', ('--workdir={run}', '--step=abc'), 1,
     "--step must be 'latest', 'all' or an integer"),
    ('evaluate', ('--workdir={run}', '--step=99'), 1,
     'No checkpoint at step 99'),
    ('evaluate', ('--workdir={run}', '--evals=nope'), 1,
     "Unknown evaluators ['nope']"),
    ('evaluate', ('--workdir={run}', 'extra'), 2,
     "unexpected arguments ['extra']"),
    ('evaluate', ('--workdir=s3://b/w',), 2, "Unsupported scheme 's3://'"),
    ('evaluate', (), 2, '--workdir'),
    ('evaluate', ('--workdir={run}', '--config={root}/configs/digits.py',
                  '--config.totl_steps=1'), 2, "Did you mean 'total_steps'?"),
    # python -m vit_jax.export
    ('export', ('--workdir={run}', '--format=onnx', '--out={tmp}/o'), 2,
     'onnx'),
    ('export', ('--workdir={run}', '--format=npz', '--out={dir}'), 2,
     "--out '{dir}' is a directory, but the npz export is one file"),
    ('export', ('--workdir={run}', '--format=timm', '--out={file}'), 2,
     "--out '{file}' is an existing file, but the timm export is a "
     'directory'),
    ('export', ('--workdir={run}', '--format=hf', '--out={file}'), 2,
     'is an existing file'),
    ('export', ('--workdir={run}', '--format=npz',
                '--out={tmp}/no_such_dir/w.npz'), 2,
     "its directory '{tmp}/no_such_dir' does not exist"),
    ('export', ('--workdir={run}', '--format=hf', '--out={tmp}/w.safetensors'),
     2, 'The hf format is a directory'),
    ('export', ('--workdir={tmp}/no_such_run', '--format=npz',
                '--out={tmp}/w.npz'), 2, 'config.json does not exist'),
    ('export', ('--workdir={run}', '--format=npz', '--out={tmp}/w.npz',
                '--step=7'), 2, 'No checkpoint at step 7'),
    ('export', ('--workdir={run}', '--format=npz'), 2, '--out'),
    ('export', ('--workdir={run}', '--format=npz', '--out={tmp}/w.npz',
                'extra'), 2, "unexpected arguments ['extra']"),
    # python -m vit_jax.scaling
    ('scaling', (*SWEEP_OK, '--out=/etc/passwd'), 2,
     "--out '/etc/passwd' is an existing file"),
    ('scaling', (*SWEEP_OK, '--out={file}/sub'), 2, 'is a file, not a '
     'directory'),
    ('scaling', ('--workdirs={tmp}/nowhere/*', '--metric=val/accuracy',
                 '--out={tmp}/o'), 2, "No workdir matches '{tmp}/nowhere/*'"),
    ('scaling', ('--workdirs={sweep}/*', '--metric=val/top1',
                 '--out={tmp}/o'), 2, "No run has the metric 'val/top1'"),
    ('scaling', (*SWEEP_OK, '--x=steps', '--out={tmp}/o'), 2, 'steps'),
    ('scaling', (*SWEEP_OK, '--bootstrap=many', '--out={tmp}/o'), 2,
     'many'),
    ('scaling', (*SWEEP_OK, '--report=maybe', '--out={tmp}/o'), 2,
     '--report=maybe'),
    ('scaling', ('--workdirs={sweep}/*', '--out={tmp}/o'), 2,
     '--metric is required'),
    ('scaling', (*SWEEP_OK,), 2, '--out is required'),
    ('scaling', (*SWEEP_OK, '--out=s3://b/o'), 2,
     "Unsupported scheme 's3://'"),
    # python -m vit_jax.predict
    ('predict', (), 2, 'give exactly one of --workdir and --pretrained'),
    ('predict', ('--workdir={run}',), 2, 'name at least one IMAGE_OR_FOLDER'),
    ('predict', ('--workdir={run}', '--pretrained=vit_base_patch16_224',
                 '{file}'), 2, 'give exactly one of'),
    ('predict', ('--workdir={run}', '{tmp}/no_such_image.png'), 1,
     'no_such_image.png'),
    ('predict', ('--workdir={run}', '{file}'), 1, '{file}'),
    ('predict', ('--workdir={run}', '--top_k=many', '{file}'), 2, 'many'),
    ('predict', ('--workdir={run}', '--config={root}/configs/digits.py',
                 '--config.modle.width=3', '{file}'), 2,
     "Did you mean 'model'?"),
    # --pretrained names (offline, an empty Hub cache: _environment).
    ('predict', ('--pretrained=vit_base_r50_s16_384', '{image}'), 1,
     "Unsupported timm architecture 'vit_base_r50_s16_384' (of "
     "'vit_base_r50_s16_384'): it needs a ResNet stem (hybrid ViT)"),
    ('predict', ('--pretrained=vit_base_patch16_224', '{image}'), 1,
     'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k: config.json '
     '(revision main) is not in the Hugging Face cache'),
    ('predict', ('--pretrained=vit_large_patch14_224', '{image}'), 1,
     "'vit_large_patch14_224' names no tag, and timm has no weights of "
     'vit_large_patch14_224 on the Hub'),
    ('predict', ('--pretrained=vit_base_patch16_224@', '{image}'), 1,
     "nothing on one side of '@'"),
    ('predict', ('--pretrained={transformers}', '{image}'), 1,
     'config.json of {transformers} is a Hugging Face transformers config '
     "(model_type 'vit', ViTForImageClassification), not timm's"),
    # python -m vit_jax.models
    ('models', ('--family=resnet',), 2, "invalid choice: 'resnet'"),
    ('models', ('--resolution=0',), 2, '--resolution must be positive'),
    ('models', ('--filter=zzz',), 2, 'no zoo row matches'),
    ('models', ('--pretrained', '--filter=resnet'), 2,
     "no pretrained architecture matches --family=None --filter='resnet'"),
    ('models', ('--bogus',), 2, 'unrecognized arguments: --bogus'),
    # python -m vit_jax.launch
    ('launch', ('--sweep={tmp}/no_such_sweep.py', '--sweep_dir={tmp}/s',
                '--dry_run'), 2, 'no_such_sweep.py'),
    ('launch', ('--sweep={tmp}/syntax_error.py', '--sweep_dir={tmp}/s',
                '--dry_run'), 2, 'syntax_error.py'),
    ('launch', ('--sweep={tmp}/typo_sweep.py', '--sweep_dir={tmp}/s',
                '--dry_run'), 2, "Did you mean 'width'"),
    ('launch', ('--sweep={root}/configs/sweeps/digits_pooling.py',
                '--sweep_dir={tmp}/s', '--backend=cloud'), 2, 'cloud'),
    ('launch', ('bogus', '--sweep_dir={tmp}/s'), 2,
     "unknown command 'bogus'"),
    ('launch', ('--sweep={root}/configs/sweeps/digits_pooling.py:long',
                '--sweep_dir={tmp}/s', '--dry_run'), 2, "Unknown ARG 'long'"),
    ('launch', ('--sweep={root}/configs/sweeps/digits_pooling.py',
                '--sweep_dir=s3://b/s', '--dry_run'), 2,
     "Unsupported scheme 's3://'"),
]
COUNT = len(CATALOGUE)

# Cases the contract does not hold for yet, with the reason; they run as
# strict xfails, so each fix is noticed.
XFAIL = {}

# Files the launcher cases read, written into {tmp}.
_SWEEP_FILES = {
    'syntax_error.py': 'def get_sweep(arg=None)\n  return {}\n',
    'typo_sweep.py': (
        'def get_sweep(arg=None):\n'
        "  return {'config': 'configs/digits.py',\n"
        "          'runs': [{'model.widht': 32}], 'fixed': {},\n"
        "          'metric': 'val/accuracy'}\n"),
}

# How each entry point's `if __name__ == '__main__':` block runs it.
_PROGRAMS = {
    'main': 'vit_jax.main', 'evaluate': 'vit_jax.evaluate',
    'export': 'vit_jax.export', 'scaling': 'vit_jax.scaling',
    'predict': 'vit_jax.predict', 'models': 'vit_jax.models',
    'launch': 'vit_jax.launch',
}


def _runner(entry):
  """A function argv -> None (exits) that runs `entry` as its module's
  `__main__` block does."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if entry == 'models':
    from vit_jax.models import __main__ as models_main  # pylint: disable=g-import-not-at-top
    return lambda argv: models_main.main(argv[1:])
  from vit_jax import cli  # pylint: disable=g-import-not-at-top
  if entry == 'main':
    from vit_jax import main as module  # pylint: disable=g-import-not-at-top
    flags.mark_flags_as_required(['config', 'workdir'])
    return lambda argv: app.run(module.main, argv=argv,
                                flags_parser=cli.parse_flags)
  if entry == 'evaluate':
    from vit_jax.evaluate import __main__ as module  # pylint: disable=g-import-not-at-top
    return lambda argv: app.run(module.main, argv=argv,
                                flags_parser=cli.parse_flags)
  if entry == 'export':
    from vit_jax.export import __main__ as module  # pylint: disable=g-import-not-at-top
    flags.mark_flags_as_required(['workdir', 'format', 'out'])
    return lambda argv: app.run(
        module.main, argv=argv, flags_parser=lambda a: cli.parse_flags(
            ['vit_jax.export', *a[1:]]))
  if entry == 'scaling':
    from vit_jax.scaling import __main__ as module  # pylint: disable=g-import-not-at-top
    return lambda argv: app.run(module.main, argv=argv,
                                flags_parser=module._parse)  # pylint: disable=protected-access
  if entry == 'predict':
    from vit_jax import predict  # pylint: disable=g-import-not-at-top
    values = predict._define_flags()  # pylint: disable=protected-access
    return lambda argv: app.run(lambda a: predict.main(a, values), argv=argv,
                                flags_parser=cli.parse_flags)
  if entry == 'launch':
    from vit_jax.launch import __main__ as module  # pylint: disable=g-import-not-at-top
    return lambda argv: app.run(module.main, argv=argv,
                                flags_parser=module._parse)  # pylint: disable=protected-access
  raise ValueError(entry)


def _reset_flags():
  """absl's flags back to unparsed, without the --config.KEY flags the
  last parse defined."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  for name in list(flags.FLAGS):
    if name.startswith('config.'):
      delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()


def _drive(entry, cases_file, results_file):
  """Runs the cases of one entry point in this process: for each, the
  status it exits with and what it wrote to file descriptor 2."""
  with open(cases_file) as f:
    cases = json.load(f)
  run = _runner(entry)
  results = []
  for case in cases:
    os.chdir(case['cwd'])
    capture = tempfile.TemporaryFile()
    saved_err, saved_out = os.dup(2), os.dup(1)
    sys.stderr.flush()
    sys.stdout.flush()
    os.dup2(capture.fileno(), 2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    code = 0
    try:
      run([_PROGRAMS[entry], *case['argv']])
    except SystemExit as stop:
      code = stop.code if isinstance(stop.code, int) else (
          0 if stop.code is None else 1)
      if not isinstance(stop.code, (int, type(None))):
        print(stop.code, file=sys.stderr)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      code = 1
    finally:
      sys.stderr.flush()
      sys.stdout.flush()
      os.dup2(saved_err, 2)
      os.dup2(saved_out, 1)
      os.close(saved_err)
      os.close(saved_out)
      os.close(devnull)
      _reset_flags()
    capture.seek(0)
    results.append({'code': code,
                    'stderr': capture.read().decode('utf-8', 'replace')})
    capture.close()
  with open(results_file, 'w') as f:
    json.dump(results, f)


# ----------------------------------------------------------------------------
# Fixtures: the things the bad inputs refer to.


@pytest.fixture(scope='module')
def places(tmp_path_factory, data_dir):
  """{run}, {sweep}, {data}: made once for the module."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tiny import tiny_config  # pylint: disable=g-import-not-at-top
  from test_scaling import write_sweep  # pylint: disable=g-import-not-at-top
  from vit_jax import checkpoint, models  # pylint: disable=g-import-not-at-top
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vit_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  digits.prepared_builder(data_dir)  # so no case prepares it
  run = str(tmp_path_factory.mktemp('run'))
  config = tiny_config(data_dir)
  config.evals = ml_collections.ConfigDict()
  config = config_lib.resolve(config)
  workdir_lib.write_config(run, config)
  kwargs = {key: value for key, value in config.model.to_dict().items()
            if key not in ('name', 'variant', 'dtype') and value is not None}
  model = models.get_model('vit', **kwargs)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1),
                                                      np.float32),
                      train=False)['params']
  checkpointer = checkpoint.TrainCheckpointer(
      os.path.join(run, 'checkpoints'), async_save=False)
  checkpointer.save(5, {'params': params}, {'step': 5})
  checkpointer.close()
  sweep = tmp_path_factory.mktemp('sweep')
  sweep = write_sweep(sweep)
  return {'run': run, 'sweep': str(sweep), 'data': data_dir, 'root': ROOT}


def _tree(path):
  """Every file and directory under `path` with size and mtime."""
  listing = {}
  for directory, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(directory, name)
      stat = os.lstat(full)
      listing[os.path.relpath(full, path)] = (stat.st_size, stat.st_mtime_ns)
  return listing


def _fill(text, values):
  for key, value in values.items():
    text = text.replace('{' + key + '}', value)
  return text


def _prepare(index, places, base):
  """The case's directory and its placeholders."""
  tmp = os.path.join(base, f'case{index:02d}')
  os.makedirs(os.path.join(tmp, 'dir'))
  with open(os.path.join(tmp, 'file.txt'), 'w') as f:
    f.write('not an image, not a directory\n')
  for name, text in _SWEEP_FILES.items():
    with open(os.path.join(tmp, name), 'w') as f:
      f.write(text)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.new('RGB', (8, 8), (200, 30, 30)).save(os.path.join(tmp,
                                                            'image.png'))
  transformers = os.path.join(tmp, 'transformers')
  os.makedirs(transformers)
  with open(os.path.join(transformers, 'config.json'), 'w') as f:
    json.dump({'model_type': 'vit',
               'architectures': ['ViTForImageClassification']}, f)
  return {**places, 'tmp': tmp, 'file': os.path.join(tmp, 'file.txt'),
          'dir': os.path.join(tmp, 'dir'),
          'image': os.path.join(tmp, 'image.png'),
          'transformers': transformers}


def _environment():
  env = dict(os.environ)
  # Pretrained names never reach the network here, nor a cache of the
  # machine's: an empty one that cannot be created.
  env['HF_HUB_OFFLINE'] = '1'
  env['HF_HUB_CACHE'] = os.path.join(os.devnull, 'hub')
  env['PYTHONPATH'] = os.pathsep.join(
      [ROOT, os.path.dirname(os.path.abspath(__file__)),
       env.get('PYTHONPATH', '')])
  env.setdefault('CUDA_VISIBLE_DEVICES', '')
  return env


@pytest.fixture(scope='module')
def outcomes(places, tmp_path_factory):
  """Every case run: [(values, code, stderr, files before, files after)]."""
  base = str(tmp_path_factory.mktemp('cases'))
  watched = (places['run'], places['sweep'])
  prepared = [_prepare(i, places, base) for i in range(COUNT)]
  before = [(_tree(values['tmp']), [_tree(p) for p in watched])
            for values in prepared]
  results = [None] * COUNT
  for entry in _PROGRAMS:
    indices = [i for i, case in enumerate(CATALOGUE) if case[0] == entry]
    cases = [{'cwd': prepared[i]['tmp'],
              'argv': [_fill(arg, prepared[i]) for arg in CATALOGUE[i][1]]}
             for i in indices]
    cases_file = os.path.join(base, f'{entry}.json')
    results_file = os.path.join(base, f'{entry}.results.json')
    with open(cases_file, 'w') as f:
      json.dump(cases, f)
    process = subprocess.run(
        [sys.executable, os.path.abspath(__file__), entry, cases_file,
         results_file], cwd=ROOT, env=_environment(), capture_output=True,
        text=True, timeout=TIMEOUT, check=False)
    assert process.returncode == 0, process.stdout + process.stderr
    with open(results_file) as f:
      for i, result in zip(indices, json.load(f)):
        results[i] = result
  return [(prepared[i], results[i]['code'], results[i]['stderr'], before[i],
           (_tree(prepared[i]['tmp']), [_tree(p) for p in watched]))
          for i in range(COUNT)]


def _lines(stderr):
  return [line for line in stderr.splitlines() if line.strip()]


def _check(case, outcome):
  entry, _, code, expected = case
  values, got, stderr, before, after = outcome
  expected = _fill(expected, values)
  lines = _lines(stderr)
  assert got == code, f'{entry}: exit {got}, not {code}:\n{stderr[-3000:]}'
  assert len(lines) == 1, f'{entry}: {len(lines)} lines:\n{stderr[-3000:]}'
  assert expected in lines[0], f'{entry}: {expected!r} not in {lines[0]!r}'
  changed = sorted(
      name for old, new in zip([before[0], *before[1]], [after[0], *after[1]])
      for name in set(old) | set(new) if old.get(name) != new.get(name))
  assert not changed, f'{entry}: files created or changed: {changed}'


def _params():
  for i, case in enumerate(CATALOGUE):
    marks = ([pytest.mark.xfail(reason=XFAIL[i], strict=True)]
             if i in XFAIL else [])
    yield pytest.param(i, id=f'{i:02d}-{case[0]}', marks=marks)


@pytest.mark.parametrize('index', list(_params()))
def test_bad_input(index, outcomes):
  _check(CATALOGUE[index], outcomes[index])


def test_catalogue_covers_every_entry_point():
  print(f'bad-input catalogue: {COUNT} cases')
  assert {case[0] for case in CATALOGUE} == set(_PROGRAMS)
  assert COUNT >= 40
  with open(os.path.join(ROOT, 'docs', 'testing.md')) as page:
    text = ' '.join(page.read().split())
  assert f'a catalogue of {COUNT} bad inputs' in text  # the page's count


# One case per entry point through the real command line.
_REAL = [next(i for i, case in enumerate(CATALOGUE) if case[0] == entry)
         for entry in _PROGRAMS]


@pytest.mark.parametrize('index', _REAL, ids=list(_PROGRAMS))
def test_command_line_matches_the_driver(index, places, outcomes,
                                         tmp_path):
  entry, argv, code, _ = CATALOGUE[index]
  values = _prepare(index, places, str(tmp_path))
  before = _tree(values['tmp'])
  result = subprocess.run(
      [sys.executable, '-m', _PROGRAMS[entry],
       *[_fill(arg, values) for arg in argv]],
      cwd=values['tmp'], env=_environment(), capture_output=True, text=True,
      timeout=TIMEOUT, check=False)
  lines = _lines(result.stderr)
  assert result.returncode == code, result.stderr[-3000:]
  assert len(lines) == 1, result.stderr[-3000:]
  driven = _lines(outcomes[index][2])[0]
  assert (lines[0].replace(values['tmp'], '<tmp>').split(':', 1)[1] ==
          driven.replace(outcomes[index][0]['tmp'], '<tmp>').split(':', 1)[1])
  assert _tree(values['tmp']) == before


def test_repeated_tuple_override_last_one_wins(tmp_path):
  """`--config.evals.fewshot.shots='(1,5)'` twice is (1, 5), not joined;
  a key the recipe leaves at its default (data.folder on digits.py) can be
  set; the launcher's sweep check still parses the same config."""
  code = (
      'from vit_jax import cli\n'
      'import sys\n'
      "cli.parse_flags(['vit_jax.main', '--config=configs/digits.py',\n"
      "                 '--workdir=/tmp/x',\n"
      "                 '--config.evals.fewshot.shots=(1,5)',\n"
      "                 '--config.evals.fewshot.shots=(1,5)',\n"
      "                 '--config.evals.fewshot.seeds=(0,1)',\n"
      "                 '--config.evals.fewshot.seeds=(2,)',\n"
      "                 '--config.data.name=image_folder',\n"
      "                 f'--config.data.folder={sys.argv[1]}',\n"
      "                 '--config.init_from.kind=npz'])\n"
      'c = cli.CONFIG.value\n'
      'print(tuple(c.evals.fewshot.shots), tuple(c.evals.fewshot.seeds),\n'
      "      c.data.folder, c.init_from.kind, 'eval_batch_size' in c,\n"
      "      'prefetch' in c.data,\n"
      "      'folder' in c.evals.fewshot.datasets.digits)\n")
  result = subprocess.run([sys.executable, '-c', code, str(tmp_path)],
                          cwd=ROOT, env=_environment(), capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == [
      '(1,', '5)', '(2,)', str(tmp_path), 'npz', 'False', 'False', 'False']


if __name__ == '__main__':
  _drive(*sys.argv[1:])
