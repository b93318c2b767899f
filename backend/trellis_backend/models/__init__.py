"""The TRELLIS model classes under their official names, and checkpoint loading."""
from .registry import (FAMILIES, build_model, derived_buffers, load_model, load_state_dict_strict, model_classes,
                       read_config, resolve_args)
from .slat_decoder_gs import ElasticSLatGaussianDecoder, SLatGaussianDecoder
from .slat_decoder_mesh import ElasticSLatMeshDecoder, SLatMeshDecoder
from .slat_decoder_rf import ElasticSLatRadianceFieldDecoder, SLatRadianceFieldDecoder
from .slat_encoder import ElasticSLatEncoder, SLatEncoder
from .slat_flow import ElasticSLatFlowModel, SLatFlowModel
from .ss_flow import SparseStructureFlowModel
from .ss_vae import SparseStructureDecoder, SparseStructureEncoder
from .sc_vae import SparseUnetVaeDecoder, SparseUnetVaeEncoder
from .fdg_vae import FlexiDualGridVaeDecoder, FlexiDualGridVaeEncoder

__all__ = [
    "FAMILIES", "build_model", "derived_buffers", "load_model", "load_state_dict_strict", "model_classes",
    "read_config", "resolve_args",
    "SparseStructureEncoder", "SparseStructureDecoder", "SparseStructureFlowModel", "SLatFlowModel",
    "ElasticSLatFlowModel", "SLatEncoder", "ElasticSLatEncoder", "SLatGaussianDecoder", "ElasticSLatGaussianDecoder",
    "SLatRadianceFieldDecoder", "ElasticSLatRadianceFieldDecoder", "SLatMeshDecoder", "ElasticSLatMeshDecoder",
]
__all__ += ["SparseUnetVaeEncoder", "SparseUnetVaeDecoder", "FlexiDualGridVaeEncoder", "FlexiDualGridVaeDecoder"]
