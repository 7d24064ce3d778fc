//! What both tools must agree on about kernel stacks: which of them hold memory that is not the
//! kernel's to leak. leak-report leaves those stacks out of its findings, and leak-record's
//! status line counts them apart, by the same rule.
use crate::AllocKind;

/// What a kernel stack holds when it is not the kernel's to leak, given the function names of
/// its frames (innermost first): `page cache` (file pages, which the kernel reclaims under
/// memory pressure: a file written to grows it) or `slab pages` (the pages a slab cache holds
/// its objects in: the objects are counted on their own stacks, and the pages again here).
/// None for anything else, and for every kind but kernel pages and slab objects.
pub fn cache_pages<'a>(
    kind: AllocKind,
    functions: impl IntoIterator<Item = &'a str> + Clone,
) -> Option<&'static str> {
    let any = |prefixes: &[&str]| {
        functions
            .clone()
            .into_iter()
            .any(|n| prefixes.iter().any(|p| n.starts_with(p)))
    };
    match kind {
        // A page-cache page's buffer heads go with it, and so do the xarray nodes that index
        // it in its file's mapping (xas_alloc under __filemap_add_folio: 7.6 KiB for a 200 MiB
        // write); a slab page's object extension vector (memcg accounting) with the slab page.
        AllocKind::KernelSlab => {
            if any(&[
                "alloc_buffer_head",
                "folio_alloc_buffers",
                "create_empty_buffers",
                "__filemap_add_folio",
                "add_to_page_cache",
                "__add_to_page_cache",
            ]) {
                Some("page cache")
            } else if any(&["alloc_slab_obj_exts"]) {
                Some("slab pages")
            } else {
                None
            }
        }
        AllocKind::KernelPage => {
            if any(&["allocate_slab", "new_slab"]) {
                Some("slab pages")
            } else if any(&[
                "filemap_",
                "__filemap_",
                "page_cache_",
                "__page_cache_",
                "do_read_cache_",
                "read_cache_",
                "grab_cache_page",
            ]) {
                Some("page cache")
            } else {
                None
            }
        }
        _ => None,
    }
}
