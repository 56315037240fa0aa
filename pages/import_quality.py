"""Import & quality: the datasets in the store, importing a file from the browser, coverage and detector faults.

An import validates everything before writing anything; a bad file is reported in plain words
naming the file, the row and the column, and the store stays as it was.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import plotly.graph_objects as go
import pydeck as pdk
import streamlit as st

from pages import _shared as sh
from trafficcore import config
from trafficcore.errors import DataError
from trafficcore.ui import SYNTHETIC_LABEL, datasets_table, site_points, view_state
from trafficcore.ui import quality as uq
from trafficcore.ui import uploads as uu
from trafficcore.ui.safe import md


@st.cache_data(show_spinner="Checking every detector...", max_entries=6)
def quality_tables(db: str, dataset: str, stamp: str):
    panel = sh.get_panel(db, dataset, stamp)
    labels = dict(zip(panel.detectors["detector_id"], uq.row_labels(panel), strict=True))
    return uq.fault_flags(panel), uq.coverage_matrix(panel).rename(index=labels)


@st.cache_data(show_spinner=False, ttl=60)
def overview(db: str, dataset: str | None, stamp: str | None):
    """The datasets table and the sites of the current dataset (two aggregate queries; cached)."""
    store = sh.get_store(db)
    return datasets_table(store), site_points(store, dataset) if dataset else None


ctx = sh.context()
db = str(config.db_path())
store = sh.get_store(db)
st.title("Import & quality")

tab_data, tab_import, tab_quality = st.tabs(["Datasets", "Import a file", "Data quality"])

with tab_data, sh.guarded("datasets table"):
    table, points = overview(db, ctx.dataset if ctx else None, ctx.stamp if ctx else None)
    if table.empty:
        st.info("No datasets yet: run `trafficcore demo`, or import a file in the next tab.")
    else:
        st.dataframe(table, hide_index=True, width="stretch", key="ds_table")
        if ctx is not None:
            if ctx.synthetic:
                st.warning(SYNTHETIC_LABEL, icon=":material/science:")
            st.subheader(f"Sites of {md(ctx.dataset)}")
            layer = pdk.Layer("ScatterplotLayer", points, id="ds_sites", get_position=["lon", "lat"], get_radius=6,
                              radius_units="'pixels'", get_fill_color=[230, 90, 40, 200], pickable=True)
            st.pydeck_chart(pdk.Deck(layers=[layer], initial_view_state=pdk.ViewState(**view_state(points)),
                                     map_provider=None, map_style=None,
                                     tooltip={"text": "{site_id} {name}\n{detectors} detectors"}), height=320)

with tab_import:
    st.caption(f"Files up to {sh.max_upload_mb()} MB (TRAFFICCORE_MAX_FILE_MB). Everything is checked before "
               "anything is written; a bad file changes nothing.")
    fmt = st.selectbox("Format", list(uu.FORMATS) + list(uu.CLI_ONLY), key="imp_format",
                       format_func=lambda k: uu.FORMATS[k].label if k in uu.FORMATS else "Aarhus CityPulse folder")
    if fmt in uu.CLI_ONLY:
        st.info(uu.CLI_ONLY[fmt], icon=":material/terminal:")
    else:
        spec = uu.FORMATS[fmt]
        if spec.note:
            st.caption(spec.note)
        uploads = {}
        cols = st.columns(len(spec.files))
        for col, role in zip(cols, spec.files, strict=True):
            uploads[role.name] = col.file_uploader(role.label, type=list(role.types), key=f"imp_{fmt}_{role.name}",
                                                   help=role.help, max_upload_size=sh.max_upload_mb())
        options: dict = {}
        if spec.options:
            o1, o2, o3 = st.columns(3)
            if "timezone" in spec.options:
                options["timezone"] = o1.text_input("Time zone (IANA)", "UTC", key=f"imp_{fmt}_tz")
            if "interval" in spec.options:
                options["interval"] = o2.text_input("Interval (blank: infer)", "", key=f"imp_{fmt}_interval",
                                                    placeholder="e.g. 15min or 300")
            if "start" in spec.options:
                options["start"] = o3.text_input("First row's time (if the file has none)", "", key=f"imp_{fmt}_start")
            if "measure" in spec.options:
                options["measure"] = o1.selectbox("Measure", ["volume", "speed"], key=f"imp_{fmt}_measure")
            if "zero_is_missing" in spec.options:
                options["zero_is_missing"] = o2.checkbox("0 means no reading", key=f"imp_{fmt}_zero")
        existing = store.dataset_names()
        name = st.text_input("Dataset name", value="mycity", key="imp_name", max_chars=uu.NAME_MAX)
        problem = uu.check_dataset_name(name, existing)
        if problem and name in existing:
            st.caption(problem)
        ready = all(uploads.get(r.name) is not None for r in spec.files if r.required)
        go_import = st.button("Check and import", type="primary", disabled=not ready, key="imp_go",
                              icon=":material/upload:")
        if not ready:
            st.caption("Choose the required file(s) to enable the import.")
        if go_import:
            if problem and name not in existing:
                st.error(md(problem))
            else:
                outcome = None
                with tempfile.TemporaryDirectory(prefix="trafficcore-upload-") as tmp, \
                        st.status("Importing...", expanded=True) as status:
                    names: dict[str, str] = {}
                    files: dict[str, Path] = {}
                    try:
                        status.write("Saving the uploaded file(s)...")
                        for role, up in uploads.items():
                            if up is not None:
                                path = uu.save_upload(up.name, up.getvalue(), Path(tmp) / role)
                                files[role] = path
                                names[str(path)] = up.name
                        status.write("Reading and checking every row...")
                        tables = uu.load(fmt, files, options)
                        summary = uu.summary(tables)
                        status.write("Checked: " + ", ".join(f"{r.table} {r.rows:,}" for r in summary.itertuples()
                                                            if r.rows))
                        status.write("Writing to the store in one transaction...")
                        counts = store.ingest(name, tables)
                        sh.get_stamp.clear()
                        quality_tables.clear()
                        overview.clear()
                        status.update(label=f"Imported '{name}'", state="complete")
                        outcome = ("ok", f"Imported dataset '{md(name)}': " + ", ".join(
                            f"{k} {v:,}" for k, v in counts.items() if v) + ". Pick it in the sidebar.")
                    except DataError as exc:
                        status.update(label="Not imported: the file has a problem", state="error")
                        outcome = ("error", uu.plain_error(exc, names))
                    except Exception as exc:  # noqa: BLE001 - a reader failing on odd input is the user's file
                        sh.log.exception("import of %s failed", list(names.values()))
                        status.update(label="Not imported", state="error")
                        outcome = ("error", uu.plain_error(exc, names))
                if outcome and outcome[0] == "ok":
                    st.success(outcome[1], icon=":material/check_circle:")
                elif outcome:
                    st.error(outcome[1], icon=":material/error:")

with tab_quality:
    if ctx is None:
        st.info("Import or generate a dataset to see its data quality.")
    else:
        with sh.guarded("quality"):
            if ctx.synthetic:
                st.caption(f":material/science: **{SYNTHETIC_LABEL}**")
            flags, cover = quality_tables(ctx.db, ctx.dataset, ctx.stamp)
            s = uq.quality_summary(flags)
            m = st.columns(5)
            m[0].metric("Detectors", s["detectors"])
            m[1].metric("Mean coverage", f"{s['coverage_pct']:.1f}%")
            m[2].metric("With gaps >= 1 h", s["with_gaps"])
            m[3].metric("Stuck >= 2 h", s["stuck"])
            m[4].metric("Zero in busy hours", s["zero"])
            st.subheader("Coverage per detector and day")
            if not cover.empty:
                heat = go.Figure(go.Heatmap(z=cover.to_numpy(), x=list(cover.columns), y=list(cover.index),
                                            colorscale=[[0, "#b2182b"], [0.5, "#fddbc7"], [1, "#2166ac"]],
                                            zmin=0, zmax=100, colorbar={"title": "% observed"},
                                            hovertemplate="%{y}<br>%{x}: %{z:.0f}% observed<extra></extra>"))
                # one labelled row per detector (site, approach, id), tall enough to read every label
                heat.update_layout(height=120 + 14 * len(cover), margin={"l": 10, "r": 10, "t": 10, "b": 10},
                                   yaxis={"dtick": 1, "automargin": True, "tickfont": {"size": 10},
                                          "autorange": "reversed"})
                st.plotly_chart(heat, width="stretch", key="q_heatmap")
            st.subheader("Detector fault flags")
            st.caption("gap: no reading for >= 1 h (local times skipped by a daylight-saving change do not "
                       "count); stuck: the same non-zero value for >= 2 h; zero in busy hours: zeros for >= 2 h "
                       "where the detector's median at that time of day is >= 5.")
            only = st.toggle("Only detectors with a fault", value=True, key="q_only")
            show = flags[flags["status"] == "check"] if only else flags
            st.dataframe(show, hide_index=True, width="stretch", key="q_flags")
