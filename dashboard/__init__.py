"""The ehflow dashboard: watch an equivariant Hamiltonian flow learn, live (``streamlit run dashboard/app.py``).

Modules:
    app         the server entry: Streamlit's ``st.App`` with the page and one extra route
    page        the page script each browser session runs: sidebar, buttons, downloads, teaching text
    settings    the sidebar's settings as a frozen dataclass, to and from the URL, to core configs
    live        ``LiveRun``: a session's handle on its run (buttons and live settings as commands)
    pool        ``Pool``: the training hosts (processes of this machine, or Ray actors with
                ``EHFLOW_RAY_ADDRESS``), placement, admission (a waiting line, turns, a share per
                browser), the pace, freeing the runs of closed tabs
    links       the server's end of each host: ``ProcessLink`` (a socket), ``ActorLink`` (Ray)
    run_state   a run's state on the server (``Shared``), the page's copy (``View``), folding updates in
    protocol    the typed messages between the server and a training process (``(run_id, message)``)
    worker      a training process: many runs (a Trainer or a batched ensemble each) in fair CPU
                shares, snapshots, symmetry readouts; ``ActorHost``, the same in a Ray actor
    live_chart  the live panel (``live_panel.js``, ``live_panel.css``) and its feed route
    figures_page the Figures download; static_assets: Streamlit's own assets from memory
    server      start the server on a free local port (tests, benchmarks, scripted demos)

From a click on Train to a redrawn chart::

    browser (page)        Streamlit server (page.py, live.py, pool.py, live_chart.py)  worker process
    ──────────────        ─────────────────────────────────────────────────     ─────────────────────
    click Train ────────▶ page rerun: LiveRun.play(): Pool.admit() (or wait in line)
                          ─ (run_id, Play(seq)) ─────────────────────────────▶  Slot.handle(): running
                                                                                 Host.loop(): the run
                                                                                 with the least CPU
                                                                                 takes a turn() …
    live panel (JS):                                                             (every step)
    GET /api/live/<token>?since=v ─▶ feed(): Beat(want_snapshot) ─────────────▶ wanted = True
                          feed waits on the run's event (no thread held)         take_snapshot()
                          reader thread ◀──────────────── Update(snapshot) ────  send()
                          apply_update(): version += 1, wake the feed's event
                          figures_for(): figures built once per version
    ◀── JSON: status + charts (those the page has by hash, the curves' new points alone)
    Plotly.react / swap the map pictures / Plotly.extendTraces; ask for the next answer (before drawing)
                          prebuild(): the next version's figures, while the browser draws

Every live-panel request is also the run's heartbeat: with no page looking for
``live.HEARTBEAT_TIMEOUT`` seconds, the worker stops training the run; once the tab's connection
has been closed ``EHFLOW_FREE_AFTER`` seconds (default ``pool.FREE_AFTER``), the pool frees it
(a closed tab costs nothing).
"""
