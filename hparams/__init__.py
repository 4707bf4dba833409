"""The model file and the zone file, installed with the package as ``spatial_clap_sb.hparams``
(:func:`spatial_clap_sb.language.default_zone_config` reads the default zones from it)."""
