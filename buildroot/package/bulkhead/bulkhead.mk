################################################################################
#
# bulkhead
#
################################################################################

# Built from the repository this BR2_EXTERNAL tree lives in.
BULKHEAD_VERSION = 0.1.0
BULKHEAD_SITE = $(BR2_EXTERNAL_BULKHEAD_PATH)/..
BULKHEAD_SITE_METHOD = local
BULKHEAD_LICENSE = Proprietary
# Do not copy build output and image caches of the source tree.
BULKHEAD_RSYNC_EXCLUDES = --exclude target --exclude image/out --exclude image/cache

# The cargo infrastructure vendors crates in its download post-process,
# which does not run for local sources: vendor them after the rsync
# (needs the crate registry, i.e. run `make bulkhead-source` once while connected;
# afterwards the build is --offline like any other cargo package).
define BULKHEAD_CARGO_VENDOR_LOCAL
	cd $(@D) && $(PKG_COMMON_CARGO_ENV) $(HOST_DIR)/bin/cargo vendor --locked \
		--versioned-dirs VENDOR > $(@D)/.cargo-vendor-config.toml
	mkdir -p $(@D)/.cargo
	cp $(@D)/.cargo-vendor-config.toml $(@D)/.cargo/config.toml
endef
BULKHEAD_POST_RSYNC_HOOKS += BULKHEAD_CARGO_VENDOR_LOCAL

BULKHEAD_CARGO_BUILD_OPTS = --bin bulkhead
BULKHEAD_CARGO_INSTALL_OPTS = --bin bulkhead

$(eval $(cargo-package))
