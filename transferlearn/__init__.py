"""transferlearn: transfer learning with pretrained CNNs in PyTorch, without the classic mistakes.

Small composable functions (each changes a model in place and returns it) and a thin
``Trainer`` built from them. See ``docs/`` for the guide.
"""

from .base import __version__
from .data.folder import FolderData, load_image_folder
from .data.images import ImageReadError, load_image
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, imagenet_transform
from .model.anatomy import Anatomy, anatomy
from .model.batchnorm import freeze_bn_running_stats, is_bn_frozen, unfreeze_bn_running_stats
from .model.freezing import freeze_backbone, unfreeze
from .model.groups import layer_groups
from .model.heads import find_head, replace_head
from .model.load import install_weights, load_model
from .model.optim import param_groups
from .ship.classifier import Classifier, load_classifier, save_classifier
from .ship.onnx_export import export_onnx
from .ship.report import ClassificationReport, classification_report
from .train.features import extract_features
from .train.history import History, plot_history
from .train.loggers import CSVLogger, TensorBoardLogger
from .train.strategy import Strategy, recommend_strategy
from .train.trainer import Trainer

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Anatomy",
    "CSVLogger",
    "ClassificationReport",
    "Classifier",
    "FolderData",
    "History",
    "ImageReadError",
    "Strategy",
    "TensorBoardLogger",
    "Trainer",
    "anatomy",
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
