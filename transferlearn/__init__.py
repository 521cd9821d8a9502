"""transferlearn: transfer learning with pretrained CNNs in PyTorch, without the classic mistakes.

Small composable functions (each changes a model in place and returns it) and a thin
``Trainer`` built from them. See ``docs/`` for the guide.
"""

from .batchnorm import freeze_bn_running_stats, is_bn_frozen, unfreeze_bn_running_stats
from .classifier import Classifier, load_classifier, save_classifier
from .features import extract_features
from .folder import FolderData, load_image_folder
from .freezing import freeze_backbone, unfreeze
from .groups import layer_groups
from .heads import find_head, replace_head
from .history import History, plot_history
from .images import ImageReadError, load_image
from .models import install_weights, load_model
from .onnx_export import export_onnx
from .optim import param_groups
from .report import ClassificationReport, classification_report
from .strategy import Strategy, recommend_strategy
from .trainer import Trainer
from .transforms import IMAGENET_MEAN, IMAGENET_STD, imagenet_transform

__version__ = "0.1.0"

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassificationReport",
    "Classifier",
    "FolderData",
    "History",
    "ImageReadError",
    "Strategy",
    "Trainer",
    "classification_report",
    "export_onnx",
    "extract_features",
    "find_head",
    "freeze_backbone",
    "freeze_bn_running_stats",
    "imagenet_transform",
    "install_weights",
    "is_bn_frozen",
    "layer_groups",
    "load_classifier",
    "load_image",
    "load_image_folder",
    "load_model",
    "param_groups",
    "plot_history",
    "recommend_strategy",
    "replace_head",
    "save_classifier",
    "unfreeze",
    "unfreeze_bn_running_stats",
    "__version__",
]
