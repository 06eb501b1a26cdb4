"""docs/config.md is generated from the config models: it must say what they say."""

from codealign import config_doc


def test_docs_config_md_is_what_the_models_say():
    assert config_doc.DOC.read_text() == config_doc.render(), "stale: run python -m codealign.config_doc"


def test_every_option_of_every_algorithm_is_documented():
    from codealign.config_train import MODELS

    text = config_doc.render()
    for name, model in MODELS.items():
        assert f"`train` with `algorithm: {name}`" in text
        for option in model.model_fields:
            assert f"| `{option}` |" in text or f"## `train.{option}`" in text or option == "algorithm"
    assert "| `max_staleness` | int >= 0 | `1` |" in text and "| `top_p` | float in (0, 1] | `0.95` |" in text


def test_check_mode_fails_on_a_stale_page(tmp_path, monkeypatch):
    monkeypatch.setattr(config_doc, "DOC", tmp_path / "config.md")
    assert config_doc.main(["--check"]) == 1  # missing
    assert config_doc.main([]) == 0 and config_doc.main(["--check"]) == 0
    (tmp_path / "config.md").write_text(config_doc.render().replace("max_staleness", "max_stale"))
    assert config_doc.main(["--check"]) == 1
