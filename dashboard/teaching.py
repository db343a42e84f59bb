"""Teaching text: what each panel shows, with the equations (``st.latex``)."""

from __future__ import annotations

import streamlit as st


def explain() -> None:
    st.subheader("What you are looking at")
    with st.expander("The model: H = K(p) + U(q) and the leapfrog flow"):
        st.markdown(
            "Data are positions **q**; a latent momentum **p** joins them to make a phase-space state "
            "s = (q, p). A base density π(s) is moved by a few leapfrog steps of a learned separable "
            "Hamiltonian. *Energies* panel: K(p) over the p-plane and U(q) over the q-plane."
        )
        st.latex(r"H(q, p) = K(p) + U(q)")
        st.latex(
            r"p_{1/2} = p - \tfrac{dt}{2}\nabla U(q),\quad q' = q + dt\,\nabla K(p_{1/2}),\quad"
            r" p' = p_{1/2} - \tfrac{dt}{2}\nabla U(q')"
        )
        st.markdown(
            "Any invertible map T carries a density by the change of variables, with a log-determinant "
            "that most flows must compute (or design to be cheap):"
        )
        st.latex(
            r"\log p(s') = \log \pi\big(T^{-1}(s')\big) + \log \left|\det \frac{\partial T^{-1}}{\partial s'}\right|"
            r" \;=\; \log \pi\big(T^{-1}(s')\big) + 0"
        )
        st.markdown(
            "Here the term is exactly zero. Each sub-step is a shear — it changes p by a function of q "
            "alone, or q by a function of p alone — whose Jacobian is triangular with ones on the diagonal, "
            "so its determinant is 1 (Liouville: a Hamiltonian flow keeps phase-space volume). The flow "
            "is exactly invertible too (run it with −dt), so the density is simply carried along. "
            "*Trajectories* panel: base samples after one step, and after the whole flow. In the Figure 2B "
            "preset every step shares one Hamiltonian, so the flow can run on for many steps (the "
            "*integrated flow*): samples gather in the wells of U. The other presets learn a Hamiltonian per "
            "step, which learns faster. "
            "(K and U are only defined up to a joint sign: (−K, −U) gives the same paths run backwards. "
            "When an MLP K learns a dome, a maximum at p = 0, the flow runs that way and the wells are U's "
            "*maxima*; the U panel says so. A convex K, as in the Figure 2B preset, cannot: "
            "there the wells are U's minima.)"
        )
    with st.expander("Learning: the ELBO and the importance-weighted bound L_K"):
        st.latex(
            r"\mathrm{ELBO}(q) = \mathbb{E}_{p \sim h(p\mid q)}"
            r"\left[\log \pi\big(T^{-1}(q, p)\big) - \log h(p \mid q)\right] \le \log p(q)"
        )
        st.latex(
            r"L_K(q) = \mathbb{E}_{p_1, \dots, p_K \sim h(\cdot \mid q)}\left[\log \frac{1}{K}\sum_{k=1}^{K}"
            r" \frac{\pi(T^{-1}(q, p_k))}{h(p_k \mid q)}\right] \;\uparrow\; \log p(q)"
        )
        st.markdown(
            "The paper trains on the ELBO (K = 1). ehflow trains on L_8, with the doubly "
            "reparameterised gradient for the encoder h(p | q): a tighter bound, so the flow learns "
            "faster (the paper's own configuration is the preset \"Fig. 2A: the paper's setup\"). "
            "*Density* panel: kernel density estimates of target samples and of model samples. "
            "*Curves* panel: the test log-likelihood L_K (solid); dashed, with finite data the same L_K on "
            "the training points (their gap is over-fitting), with infinite data the bound trained on each "
            "batch. The legend names each estimator. The learning rate stays constant here (a lesson has "
            "no end to decay towards), so the panels show the model with its weights averaged over its "
            "recent steps (about the last 2.5 % of the steps so far, at most the last 100), which "
            "removes most of the noise a constant rate leaves in them (the paper's preset shows its last weights)."
        )
    with st.expander("Symmetry: the Poisson bracket and the constraint κ"):
        st.latex(
            r"\{f, g\} = \sum_i \frac{\partial f}{\partial q_i}\frac{\partial g}{\partial p_i}"
            r" - \frac{\partial f}{\partial p_i}\frac{\partial g}{\partial q_i}, \qquad g = q_1 p_2 - q_2 p_1"
        )
        st.latex(
            r"\min_{\theta}\max_{\lambda \ge 0}\; -L_K"
            r" + \lambda\left(\mathbb{E}_{\pi}[\{g, H\}^2] - \kappa\right)"
        )
        st.markdown(
            "{g, H} = 0 means the flow commutes with rotations (Noether): rotate then flow equals "
            "flow then rotate. With a rotation-invariant base, the learned density is then invariant "
            "too (Lemma 1). **κ** is the tolerated violation: smaller κ, stricter symmetry. The "
            "multiplier **λ** grows while the constraint is violated and shrinks once it holds. "
            "The soft-uniform base is *not* rotation invariant, so there the promise does not hold. "
            "The constraint is measured on base samples, where the flow starts: a small "
            "E_π[{g, H}²] is not yet an invariant density where the data are. On your own data, "
            "whose points may be far from the base's bulk, the readout *Rotation invariant?* (the "
            "spread of log p̂ over rotations, against its noise floor) is the one to trust: a spread "
            "of several nats with a tiny constraint value means the flow is not symmetric where it "
            "matters. "
            "**Exact symmetry** builds the symmetry in instead of asking for it: K and U become "
            "networks of |p|² and |q|², so {g, H} = 0 for every weight and there is no κ left to set. "
            "Compare the two: how much closer does the exact prior get, and how fast?"
        )
