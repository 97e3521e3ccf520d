//! Links the built-in adapter crates into the binary. Each registers its families itself with
//! `inventory`; naming a crate here only makes sure the linker keeps it.

use lmms_internlm_xcomposer2 as _;
use lmms_internlm2 as _;
use lmms_llava as _;
use lmms_mllama as _;
use lmms_phi3_v as _;
use lmms_qwen_vl as _;
use lmms_qwen2_vl as _;
