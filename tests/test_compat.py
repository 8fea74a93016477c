def test_robustbench_imports_with_the_pyautoattack_alias() -> None:
    from bench.zoo.compat import import_robustbench

    import_robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet
    from robustbench.utils import load_model  # noqa: F401  (the import itself is the check)

    assert sum(p.numel() for p in WideResNet(28, 10).parameters()) == 36_479_194
