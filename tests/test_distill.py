"""Knowledge distillation in `dbrt train --teacher`: the loss term, a wider teacher taught to a
narrower student, a teacher reading each crop larger (--teacher-scale), the settings a resumed run
keeps, and the user's mistakes as one line."""
import json

import pytest

torch = pytest.importorskip("torch")


def _cfg(tmp_path, name, **changes):
    from export.train.config import TrainConfig

    settings = dict(out_dir=str(tmp_path / name), width=0.25, steps=2, batch=1, crop=64, warmup=1,
                    workers=0, threads=1, log_every=1, save_every=100, keep_every=100)
    settings.update(changes)
    return TrainConfig(**settings)


def test_distill_loss_is_zero_where_student_and_teacher_agree_and_grows_apart():
    from export.train.losses import distill_loss

    teacher = torch.tensor([[0.9, 0.1, 0.5]])
    assert float(distill_loss(teacher.clone(), teacher)) == pytest.approx(0.0, abs=1e-6)
    near, far = torch.tensor([[0.8, 0.2, 0.5]]), torch.tensor([[0.2, 0.8, 0.5]])
    assert 0 < float(distill_loss(near, teacher)) < float(distill_loss(far, teacher))
    # the soft-target cross-entropy's gradient: it pulls the student towards the teacher
    student = torch.tensor([[0.5, 0.5, 0.5]], requires_grad=True)
    distill_loss(student, teacher).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 1] and abs(float(student.grad[0, 2])) < 1e-6


def test_training_loss_adds_the_weighted_term_only_with_a_teacher():
    from export.train.losses import training_loss

    gt = torch.zeros(1, 8, 8)
    gt[:, 2:6, 2:6] = 1
    batch = {"gt": gt, "mask": torch.ones(1, 8, 8), "thresh_map": torch.full((1, 8, 8), 0.5),
             "thresh_mask": torch.ones(1, 8, 8)}
    pred = {"binary": torch.full((1, 1, 8, 8), 0.3), "thresh": torch.full((1, 1, 8, 8), 0.4),
            "thresh_binary": torch.full((1, 1, 8, 8), 0.3)}
    alone = training_loss(pred, batch)
    assert "distill" not in alone
    taught = training_loss(pred, batch, torch.full((1, 1, 8, 8), 0.7), weight=2.0)
    assert float(taught["loss"]) == pytest.approx(float(alone["loss"]) + 2.0 * float(taught["distill"]))


def test_a_wider_teacher_trains_a_narrower_student(tmp_path, capsys):
    from export.model import DBNet
    from export.train.loop import train
    from export.train.weights import load_teacher

    torch.set_num_threads(1)
    teacher_ck = train(_cfg(tmp_path, "teacher", width=0.5))
    teacher = load_teacher(str(teacher_ck), torch.device("cpu"))
    assert teacher.width == 0.5 and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())

    capsys.readouterr()
    student_ck = train(_cfg(tmp_path, "student", teacher=str(teacher_ck), distill=0.5))
    steps = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step 2/2")]
    assert steps and " distill " in steps[0]  # the term is in the progress line
    saved = torch.load(str(student_ck), weights_only=True)
    assert saved["config"]["teacher"] == str(teacher_ck) and saved["config"]["distill"] == 0.5
    DBNet("resnet18", width=0.25).load_state_dict(saved["model"])  # the student keeps its own width


class _Recorder(torch.nn.Module):
    """A teacher that records the input size it was given and answers its mean brightness."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return x.mean(dim=1, keepdim=True).sigmoid()


def test_a_scaled_teacher_reads_the_crop_larger_and_answers_at_the_students_size():
    from export.train.weights import teacher_probability

    image = torch.zeros(2, 3, 64, 96)
    image[:, :, 16:48, 32:64] = 4.0
    teacher = _Recorder()
    same = teacher_probability(teacher, image)
    assert teacher.sizes == [(64, 96)] and torch.equal(same, teacher(image))
    larger = teacher_probability(teacher, image, 1.5)
    assert teacher.sizes[-1] == (96, 160)  # 1.5x, each side rounded to a multiple of 32
    assert larger.shape == (2, 1, 64, 96) and larger.dtype == torch.float32
    # area averaging back: the bright block stays bright, the background dark
    assert float(larger[0, 0, 32, 48]) > 0.95 and float(larger[0, 0, 2, 2]) == pytest.approx(0.5)
    smaller = teacher_probability(teacher, image, 0.5)
    assert teacher.sizes[-1] == (32, 64) and smaller.shape == (2, 1, 64, 96)


def test_a_model_teaches_itself_at_a_larger_scale(tmp_path, capsys):
    from export.train.loop import train

    torch.set_num_threads(1)
    teacher_ck = train(_cfg(tmp_path, "teacher"))
    student_ck = train(_cfg(tmp_path, "student", init=str(teacher_ck), teacher=str(teacher_ck),
                            teacher_scale=1.5))
    assert torch.load(str(student_ck), weights_only=True)["config"]["teacher_scale"] == 1.5


def test_teacher_settings_are_the_runs_own_on_resume(tmp_path, capsys):
    from export.train.loop import train
    from pipeline.cli import main

    torch.set_num_threads(1)
    teacher_ck = train(_cfg(tmp_path, "teacher"))
    out = tmp_path / "student"
    args = ["train", "--out", str(out), "--width", "0.25", "--steps", "2", "--batch", "1",
            "--crop", "64", "--workers", "0", "--threads", "1", "--teacher", str(teacher_ck)]
    assert main(args + ["--time-limit", "0.001"]) == 0  # stops after its first step
    assert json.loads((out / "config.json").read_text())["teacher"] == str(teacher_ck.resolve())
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--distill", "3"]) != 0
    assert "--distill 3.0: --resume continues the run" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--teacher-scale", "2"]) != 0
    assert "--teacher-scale 2.0: --resume continues the run" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume"]) == 0


def test_a_missing_teacher_is_one_error_naming_the_flag(tmp_path, capsys):
    from pipeline.cli import main

    code = main(["train", "--out", str(tmp_path / "run"), "--teacher", str(tmp_path / "none.pt")])
    err = capsys.readouterr().err
    assert code != 0 and "--teacher checkpoint not found" in err and "Traceback" not in err
